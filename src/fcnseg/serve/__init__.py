"""``fcnseg serve``: a segmentation model behind an HTTP API and a web page.

Needs the ``serve`` extra (``pip install 'fcnseg[serve]'``: FastAPI, uvicorn,
prometheus_client, python-multipart). :func:`~fcnseg.serve.app.create_app` builds
the app; :func:`~fcnseg.serve.launch.serve` runs it with uvicorn.
"""
