"""``fgvc serve``: an export bundle behind HTTP on LitServe, with a web page.

server.py    FgvcServer: the LitServer, its routes, start-up and shutdown
apis.py      PredictAPI (batched top-k), ExplainAPI (Grad-CAM): the model workers
uploads.py   UploadGate: size limit, multipart / raw body, decoding, one-line 4xx errors
static/      the page (plain HTML, CSS and JavaScript; no external resources)
"""
