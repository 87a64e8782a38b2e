"""The browser tier: charpack's nodes in the real ComfyUI graph editor, headless Chromium."""
