"""The panels of the console, one per module. Each renders from the controller's state."""
