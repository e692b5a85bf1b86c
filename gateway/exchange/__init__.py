"""The exchange API (``/exchange/v1``): every dataset of the catalogue (``contract.catalogue``) read
through one door, with one envelope, one error model and one cursor pagination, and personal fields
masked from the catalogue's classification."""
