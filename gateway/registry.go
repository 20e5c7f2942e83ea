package gateway

import (
	"sync"
	"time"
)

// registry holds live and recently finished tasks by tenant-scoped id, and
// remembers admitted ids for task_id_ttl_ms after their logs are dropped so a
// duplicate is refused with 409 and never runs twice (SPEC §3.1).
type registry struct {
	mu    sync.Mutex
	tasks map[taskKey]*task
	ids   map[taskKey]time.Time // admitted id → when it may be forgotten
	idTTL time.Duration
	now   func() time.Time
}

func newRegistry(idTTL time.Duration) *registry {
	return &registry{
		tasks: make(map[taskKey]*task),
		ids:   make(map[taskKey]time.Time),
		idTTL: idTTL,
		now:   time.Now,
	}
}

// reserve claims k for a new task; false when the id was already admitted.
// A reservation is released with unreserve if admission then fails.
func (g *registry) reserve(k taskKey) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if exp, ok := g.ids[k]; ok && g.now().Before(exp) {
		return false
	}
	if _, ok := g.tasks[k]; ok {
		return false
	}
	g.ids[k] = g.now().Add(g.idTTL)
	return true
}

func (g *registry) unreserve(k taskKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.ids, k)
}

func (g *registry) add(t *task) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tasks[t.key] = t
}

func (g *registry) get(k taskKey) (*task, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.tasks[k]
	return t, ok
}

// retire drops a finished task's log after the retention time; its id stays
// remembered until the id TTL runs out.
func (g *registry) retire(t *task, retention time.Duration) {
	time.AfterFunc(retention, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.tasks[t.key] == t {
			delete(g.tasks, t.key)
			// The id stays remembered for the TTL after the log is gone.
			g.ids[t.key] = g.now().Add(g.idTTL)
		}
	})
}

// live returns the tasks still held (for shutdown).
func (g *registry) live() []*task {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*task, 0, len(g.tasks))
	for _, t := range g.tasks {
		out = append(out, t)
	}
	return out
}

// counts returns held tasks and remembered ids (for tests and metrics).
func (g *registry) counts() (tasks, ids int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.tasks), len(g.ids)
}

// sweep forgets expired ids.
func (g *registry) sweep() {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for k, exp := range g.ids {
		if !now.Before(exp) {
			delete(g.ids, k)
		}
	}
}
