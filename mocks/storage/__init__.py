"""Supabase Storage mock: `create_app(settings)` in app.py; objects are files on disk."""
