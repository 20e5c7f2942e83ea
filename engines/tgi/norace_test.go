//go:build !race

package tgi

const raceEnabled = false
