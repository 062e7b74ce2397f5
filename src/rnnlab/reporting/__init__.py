"""Reading finished runs back: sweep tables, learning curves, reruns."""
