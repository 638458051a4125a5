"""Sources behind one protocol per kind of data: prices, macro series, fundamentals."""
