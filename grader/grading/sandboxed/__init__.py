"""Code that runs inside the sandbox's own processes: the fork server and the confined child
that loads a student's model. Nothing here may import the database, the settings, the
service or anything that holds a secret; what crosses to the trusted side is raw bytes in
the frames of `grader.grading.protocol`."""
