"""End-to-end studies behind the pyrobust command: the LP-FT demo and the mixing study."""
