"""Reconciliation: the control-total chain trailer -> read -> staging -> final, and its audit."""
