"""The exercises' source files: each one is the solution, with every answer between a ``# TODO`` line and
an ``# END`` line. ``minigpt.exercises.template(name)`` blanks the answers out (the student's file),
``minigpt.exercises.solution(name)`` drops the markers. They are read as text, never imported by the
package."""
