"""Small C helpers where no library does the job (built by decoder.native.build)."""
