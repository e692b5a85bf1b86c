"""The gas service: LPG cylinder one-code traceability, the fill check, EPCIS 2.0, leak incidents."""
