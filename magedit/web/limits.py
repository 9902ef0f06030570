"""What one visitor, one request and the whole page may use: every cap of the public page, each
with the reason for its number. The library's own bounds (image size, prompt length, edit words,
regions, clicks per mask) live with the code they protect; this file names the page's.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------- the queue
# Edits waiting for the GPU beyond this are refused ("the page is busy") instead of piling up: at
# about 7 s per edit on a GPU, the 16th waits two minutes. (The edits wait in the page's own line,
# job.Line, which tells each its place and lets Cancel leave it; Gradio's queue holds at most
# GRADIO_QUEUE_SIZE events of any kind.)
QUEUE_SIZE = 16
GRADIO_QUEUE_SIZE = 64
# A browser session has at most one edit running or waiting (admission.py): a second press of
# Edit, or a script, cannot stack jobs. Sessions are cheap to make, so one network address may
# hold at most this many (a household or office behind one address can still edit at once).
EDITS_PER_ADDRESS = 2
# A job whose client has not read this many of the queue's messages (position updates) by the
# time it would start stopped listening: it is dropped, not run (a browser reads each at once).
UNREAD_MESSAGES = 8
# Seconds of wall clock per edit job (--time-limit); a longer one is stopped with an error.
TIME_LIMIT = 600.0

# ----------------------------------------------------------------------------- segmentation
# Segment Anything calls (clicks, the /segment API) running at once. Each holds a photo-sized
# candidate set (three bool masks: 48 MB at 16 MP) and, for a new photo, an image encoding; two
# keep a 2-core machine answering while an edit runs (30 at once took 4.5 GB and slowed an edit
# 45x).
SEGMENT_CONCURRENCY = 2
# /segment calls one address may have queued or running: a script's flood cannot fill the queue
# that the page's events share (70 calls once made an honest visitor's edit "Queue is full").
SEGMENTS_PER_ADDRESS = 4

# ---------------------------------------------------------------------------------- uploads
# Gradio refuses larger uploads before our code sees them. A 24-megapixel camera JPEG is about
# 12 MB; the images themselves are bounded by magedit.images.MAX_PIXELS.
MAX_FILE_SIZE = "25mb"
# Bytes one network address may upload (photos, mask files, the brush's layers) in any
# UPLOAD_WINDOW seconds: four full-size photos a minute. One client once wrote 281 MB/s of files,
# which Gradio keeps for two hours.
UPLOAD_BYTES = 100 * 2**20
UPLOAD_WINDOW = 60.0
# Any other request body (a queue join, a direct call) carries values and file references, never
# files: a few kilobytes. 1 MB leaves room for a long list of points and refuses a 50 MB JSON.
MAX_BODY_BYTES = 2**20
# The page's direct calls (clicks, uploads, text checks) in flight at once per address: a
# visitor makes one to three at a time, and an office behind one address a few visitors' worth;
# a script's 60 parallel clicks once tied up every server thread (the page stopped answering).
DIRECT_PER_ADDRESS = 12
# The photo is sent to the browser at most this long after every click (and the brush paints on
# it): a phone screen needs no more, and a 1024-pixel JPEG is about 150 KB.
DISPLAY_SIDE = 1024
# The brush's layers: the editor paints on the displayed photo, so a layer larger than this is
# not one of ours (a decompression bomb is refused from its header, before decoding).
MAX_LAYER_PIXELS = DISPLAY_SIDE * DISPLAY_SIDE
MAX_LAYERS = 4  # the editor sends one layer (layers=False); a few more are tolerated
# The brush editor uploads its layers before the event that reads them, and Gradio keeps each
# upload until that event (an abandoned one forever: 100 x 5 MB added 500 MB). Kept here: at most
# MAX_BLOBS paintings (the oldest dropped), each file at most MAX_BLOB_BYTES (a 1024 x 1024 RGBA
# PNG of brush strokes is well under 1 MB; 4 MB is four times the worst), all together at most
# MAX_BLOB_STORE bytes: about a hundred visitors painting at the same moment.
MAX_BLOBS = 128
MAX_BLOB_BYTES = 4 * 2**20
MAX_BLOB_STORE = 256 * 2**20

# ---------------------------------------------------------------------------------- results
MAX_OUTPUTS = 200  # results kept on disk (outputs/); the oldest are deleted
GALLERY_SIZE = 12  # this session's newest results in its gallery
# Gradio's cache (uploads, returned images): every 30 minutes, delete what is older than 2 hours.
DELETE_CACHE = (1800, 7200)
