      *****************************************************************
      * PAYMENTS AND FEES EXTRACT - EBCDIC (CP037), RECFM=VB
      * ONE HEADER, PAYMENT AND FEE RECORDS IN ANY ORDER, ONE TRAILER.
      * REC-TYPE TELLS THEM APART; THE TRAILER COUNTS EACH TYPE.
      *****************************************************************
       01  BANK-HEADER.
           05  REC-TYPE                PIC X.
           05  BUSINESS-DATE           PIC 9(8).
           05  SOURCE-SYSTEM           PIC X(20).
       01  PAYMENT-REC.
           05  REC-TYPE                PIC X.
           05  PAY-ID                  PIC X(12).
           05  ACCOUNT-ID              PIC 9(10).
           05  PAY-DATE                PIC 9(8).
           05  PAY-AMOUNT              PIC S9(11)V99 COMP-3.
           05  CURRENCY                PIC X(3).
       01  FEE-REC.
           05  REC-TYPE                PIC X.
           05  FEE-ID                  PIC X(10).
           05  FEE-CODE                PIC X(4).
           05  FEE-AMOUNT              PIC S9(7)V99.
       01  BANK-TRAILER.
           05  REC-TYPE                PIC X.
           05  TRL-COUNT               PIC 9(10).
           05  TRL-AMOUNT              PIC S9(16)V99 COMP-3.
           05  TRL-PAY-COUNT           PIC 9(10).
           05  TRL-FEE-COUNT           PIC 9(10).
