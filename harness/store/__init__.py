"""Files the tool writes and reads back: versioned, atomic, locked (files), and the results of one
run (runs)."""
