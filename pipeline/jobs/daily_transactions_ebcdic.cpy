      *****************************************************************
      * DAILY TRANSACTIONS EXTRACT - EBCDIC (CP037), RECFM=FB LRECL=100
      * ONE HEADER, THE DETAILS, ONE TRAILER. REC-TYPE TELLS THEM APART.
      *****************************************************************
       01  TXN-HEADER.
           05  REC-TYPE                PIC X.
               88  HDR-IS-HEADER       VALUE 'H'.
           05  BUSINESS-DATE           PIC 9(8).
           05  SOURCE-SYSTEM           PIC X(20).
           05  FILLER                  PIC X(71).
       01  TXN-DETAIL.
           05  REC-TYPE                PIC X.
           05  TXN-ID                  PIC X(16).
           05  ACCOUNT-ID              PIC 9(10).
           05  TXN-DATE                PIC 9(8).
           05  AMOUNT                  PIC S9(11)V99 COMP-3.
           05  CURRENCY                PIC X(3).
           05  DESCRIPTION             PIC X(40).
           05  FILLER                  PIC X(15).
       01  TXN-TRAILER.
           05  REC-TYPE                PIC X.
           05  DETAIL-COUNT            PIC 9(10).
           05  AMOUNT-TOTAL            PIC S9(16)V99 COMP-3.
           05  FILLER                  PIC X(79).
