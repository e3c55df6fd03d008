"""Speech input for the IVR: recognizer engines behind one interface (`engines`), constrained matching of
what was heard to a menu's choices (`matching`), voice-activity endpointing (`vad`), the live audio of a
call (`media`: ARI externalMedia over RTP) and the listener that ties them together on a call (`listener`).

Text to speech lives in `speech.tts`."""
