"""The IVR: prompts (text to speech), the caller's session and the menu that decides where a call goes."""
