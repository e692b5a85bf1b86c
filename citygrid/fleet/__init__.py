"""Vehicle positions, the same way in every service that keeps a fleet's: a report checked
(``reports``) and stored by group commit (``writer``), whether it came over a terminal's JT/T 808
connection (``citygrid.jt808``) or from a vendor's platform over HTTP. Each service has its own
positions table in the column order ``reports.ROW_ORDER`` gives."""
