"""The register: drop-off points with their bins, collection points, vehicles, end facilities, routes."""
