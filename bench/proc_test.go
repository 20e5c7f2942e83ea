package bench

import (
	"os"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	f := func(line string, want uint64, wantErr bool) {
		t.Helper()
		got, err := parseStatCPU([]byte(line))
		if (err != nil) != wantErr || got != want {
			t.Errorf("parseStatCPU(%q) = %d, %v; want %d (error %v)", line, got, err, want, wantErr)
		}
	}
	// A real line: utime 1234, stime 56.
	f("4242 (orchd) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 56 0 0 20 0 9 0 100 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n", 1290, false)
	// A command name with spaces and parentheses.
	f("7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 5 100 10", 30, false)
	// Truncated or garbled.
	f("7 (x) R 1 2", 0, true)
	f("no parens here", 0, true)
	f("7 (x) R 1 7 7 0 -1 0 0 0 0 0 ten 20 0", 0, true)
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\torchd\nVmPeak:\t  900 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40000 kB\n"
	v, err := parseStatusKB([]byte(status), "VmHWM:")
	if err != nil || v != 51200*1024 {
		t.Errorf("VmHWM = %d, %v", v, err)
	}
	if _, err := parseStatusKB([]byte("Name:\tx\n"), "VmHWM:"); err == nil {
		t.Error("missing VmHWM accepted")
	}
	if _, err := parseStatusKB([]byte("VmHWM:\t12 MB\n"), "VmHWM:"); err == nil {
		t.Error("odd unit accepted")
	}
}

// TestProcSamplersOnSelf reads this test process's own /proc entries.
func TestProcSamplersOnSelf(t *testing.T) {
	pid := os.Getpid()
	c0, err := ProcCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Burn a little CPU; the counter must not go backwards.
	x := 0
	for i := 0; i < 5_000_000; i++ {
		x += i ^ (x >> 3)
	}
	_ = x
	c1, err := ProcCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if c0 < 0 || c1 < c0 {
		t.Errorf("CPU went from %v to %v", c0, c1)
	}
	rss, err := ProcPeakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 {
		t.Errorf("peak RSS %d", rss)
	}
	ps := procSet{pid, pid}
	if sum, err := ps.peakRSS(); err != nil || sum < 2*rss {
		t.Errorf("procSet peak RSS %d, %v; want at least %d", sum, err, 2*rss)
	}
	if _, err := ProcCPU(1 << 30); err == nil {
		t.Error("a PID that cannot exist was read")
	}
}

func TestParseProcStatBusy(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	got, err := parseProcStatBusy([]byte("cpu  100 5 50 1000 7 1 2 3 40 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"))
	if err != nil || got != 100+5+50+1+2+3 {
		t.Errorf("busy = %d, %v; want 161", got, err)
	}
	if _, err := parseProcStatBusy([]byte("intr 1 2 3\n")); err == nil {
		t.Error("a file without the cpu line accepted")
	}
	if _, err := MachineBusy(); err != nil {
		t.Error(err)
	}
}
