"""`facedeblur train harvest`: collect clean, sharp face photos the user may use, with their provenance,
into a folder that `facedeblur train prepare` reads directly.

One module per concern:
  settings.py    the thresholds and limits, with their defaults and why
  politeness.py  robots.txt (user agent `facedeblur-harvester`, Crawl-delay) and one request at a time per host
  fetch.py       HTTP(S) downloads: only http/https, redirects checked hop by hop, byte limits, content type
  web.py         pages rendered in headless Chromium (Selenium), scrolled, images, licence and links read
  checks.py      byte, pixel and format limits before decoding; the face rules; exact and near duplicates
  footage.py     the sharpest, most frontal frames of each tracked person in a video or frame folder
  output.py      the output layout, atomic writes, provenance.jsonl and the summary
  run.py         the sources in order, each candidate image through the checks, the summary
  command.py     the CLI subcommand
"""
