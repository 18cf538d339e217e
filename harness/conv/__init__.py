"""Convolutions as data: geometry, the layer catalog, sparse weight forms, generated weights, and
checking an output against the float64 reference."""
