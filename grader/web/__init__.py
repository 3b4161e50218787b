"""Server-rendered pages for students and instructors (Jinja2, plain JS, no build step)."""
