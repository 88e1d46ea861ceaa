"""``preview``: the bundle in a local web page, run by LiteRT.js in the browser, as a web or Flutter app would.

The page decodes with the EXIF orientation applied, resizes with the contract's own JavaScript
(``toolkit/data/resize.js``), runs ``model.tflite`` with LiteRT.js's WebAssembly build and shows the top 3,
the referral decision and the latency, under "not a medical device". Everything is served from 127.0.0.1:
no CDN, no fonts from elsewhere, so it works offline.
"""
