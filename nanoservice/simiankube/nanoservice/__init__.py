"""The nanoservice: one small aiohttp program that behaves like a spigo package."""
