"""``zdse-web``: a live web dashboard of the bus's services, routes and tables.

One concept per module:

- :mod:`zdse.web.cli`: the command line, and the process (HTTP server and bus client).
- :mod:`zdse.web.app`: the routes: HTML pages, their JSON API, the event streams.
- :mod:`zdse.web.pages`: the HTML of each page (the browser fills it in from the API).
- :mod:`zdse.web.forms`: the request form's fields, checked (pure).
- :mod:`zdse.web.encode`: values as JSON a browser can parse (pure).
- :mod:`zdse.web.feed`: one browser stream's events, bounded in bytes (pure).
- :mod:`zdse.web.overview`: the front page's model: services (gone ones too),
  routes, counters, whether the cage answers (pure).
- :mod:`zdse.web.cagewatch`: polls the cage for the overview while someone looks.
- :mod:`zdse.web.stream`: the bridge from bus subscriptions to Server-Sent Events.
- ``static/``: the page script and style sheet, served as they are (no build step).
"""
