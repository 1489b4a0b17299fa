"""The Gradio demo of crossmodal: installed as the package `crossmodal_demo`, started by `crossmodal demo`."""
