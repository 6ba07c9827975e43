"""Development tools of JobFlow Similar: not part of the product (tests and benchmarks use them)."""
