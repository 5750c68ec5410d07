"""The console's screens: the main panels, the incoming-call dialog, help, pickers."""
