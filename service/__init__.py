"""QuirkScope service: Flask API, report pages and the command-line client. Kept import-light: no Flask here."""
