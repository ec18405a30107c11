//go:build race

package sim

// raceEnabled: the race detector slows every run several times over; the
// long campaigns run a smaller share of their seeds under it (the
// simulation is single-threaded: what the detector can find, a few runs
// find).
const raceEnabled = true
