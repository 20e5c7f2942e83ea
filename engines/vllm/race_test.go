//go:build race

package vllm

const raceEnabled = true
