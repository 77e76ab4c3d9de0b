"""Wiegand card readers behind serial converters, and the Wiegand bit formats OSDP readers share."""
