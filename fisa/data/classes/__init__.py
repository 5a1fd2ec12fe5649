"""Class-list data files (one JSON per dataset) and the builder that makes them from `sources/`."""
