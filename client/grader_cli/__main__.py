from grader_cli.main import run

run()
