"""Reading runs back: the collector's Query client and the v1 shapes built from its answers."""
