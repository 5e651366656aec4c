"""pyqtgraph views. Each takes its data from the window/store and only draws."""
