"""The stream side of Live Offers: pure Python, no Django, an injected clock everywhere."""
