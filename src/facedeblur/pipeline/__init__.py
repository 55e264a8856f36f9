"""The runtime path a face takes: detect -> align -> restore -> paste back."""
