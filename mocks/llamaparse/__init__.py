"""LlamaParse v1 mock: `create_app(settings)` in app.py, content extraction in extract.py."""
