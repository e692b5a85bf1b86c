"""The register: transport companies, trucks with their terminals, drivers, sites, routes, areas."""
