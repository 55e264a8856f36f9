"""`facedeblur serve`: the review web application over the daemon's outbox and journal (docs/review.md).

One module per concern: command (the CLI and start-up checks), auth (credentials, login limits, CSRF),
catalog (read-only journal queries and manifests), safe_files (serving files that stay inside a folder),
store (review marks and their append-only audit log), case_export and report (the evidence bundle),
app (the Starlette routes and middleware; run by uvicorn from command).
"""
