"""The report's Jinja2 template and stylesheet. Kept as Python strings, not package data files,
so a plain (non-editable) install of the package carries them."""

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ document.name }} · modeleval report</title>
</head>
<body>
<h1>{{ document.name }}</h1>
<p>{{ document.status }}</p>
<script>{{ bundle | safe }}</script>
<script>document.body.dataset.ready = "1";</script>
</body>
</html>
"""
