from smalldata.cli import app

app(prog_name="smalldata")
