"""The operator web console (server-rendered pages, htmx fragments, one small ES module)."""
