"""Reading inputs: photo folders (files), pictures (images) and caption sets (captions).

The first stage of the flow; nothing here knows about models or databases.
"""
