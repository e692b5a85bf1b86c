"""Pure rules of the gas service: the cylinder lifecycle, the fill check and safety dates, leak drills."""
