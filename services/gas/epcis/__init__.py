"""GS1 EPCIS 2.0 for cylinders: typed models of the JSON binding, GRAI codes, and events ↔ our scans."""
