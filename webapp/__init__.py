"""Local web app (Gradio) for the two-stage chain: `handlers` are the functions the UI calls, `ui` lays
the page out and launches it, `context` loads the models and holds the defaults."""
