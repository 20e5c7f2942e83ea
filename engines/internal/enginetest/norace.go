//go:build !race

package enginetest

// RaceEnabled reports a -race build, where allocation counts differ.
const RaceEnabled = false
