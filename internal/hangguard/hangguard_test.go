package hangguard

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestGuardNamesTheHungTest runs a hung "test" in a child process: the guard
// must end it with the test's name last and goroutine stacks before it.
func TestGuardNamesTheHungTest(t *testing.T) {
	if os.Getenv("HANGGUARD_CHILD") == "1" {
		Start("TestChildHangs", 50*time.Millisecond)
		time.Sleep(time.Minute)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGuardNamesTheHungTest$")
	cmd.Env = append(os.Environ(), "HANGGUARD_CHILD=1")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("the child was not ended by its guard")
	}
	if err == nil {
		t.Fatalf("the child exited cleanly:\n%s", out)
	}
	s := string(out)
	dump := strings.Index(s, "goroutines by stack")
	name := strings.Index(s, "panic: hangguard: TestChildHangs hung")
	if dump < 0 || name < dump || !strings.Contains(s, "time.Sleep") {
		t.Fatalf("want the goroutine dump (with the sleeping test) then the named panic, got:\n%s", s)
	}
}

// TestStopDisarms: a guard stopped in time does nothing.
func TestStopDisarms(t *testing.T) {
	stop := Start("TestStopDisarms", 20*time.Millisecond)
	stop()
	time.Sleep(60 * time.Millisecond)
}
