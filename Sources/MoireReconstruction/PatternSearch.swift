/// A greedy pattern search (compass search): from a point, each direction at the current step is
/// tried in turn, from the point as it stands, and taken at once when it lowers the cost; when no
/// direction does, the step is halved, down to `finest`.
///
/// The estimation's three refinements share it: the wave vector on the correlation map's
/// magnitude, and the band-overlap fit's phases and wave vector.
enum PatternSearch {
    /// The point of lowest cost found and its cost. `move(point, direction, step)` is the trial
    /// point one step from `point` in direction `0..<directions`, or nil where that leaves the
    /// allowed range; the cost at `start` is given as `startCost`.
    static func minimise<Point>(
        from start: Point, cost startCost: Double, firstStep: Double, finest: Double, directions: Int,
        move: (Point, Int, Double) -> Point?, cost: (Point) -> Double
    ) -> (point: Point, cost: Double) {
        var point = start
        var best = startCost
        var step = firstStep
        while step >= finest {
            var improved = false
            for direction in 0..<directions {
                guard let trial = move(point, direction, step) else { continue }
                let value = cost(trial)
                if value < best {
                    best = value
                    point = trial
                    improved = true
                }
            }
            if !improved { step /= 2 }
        }
        return (point, best)
    }
}
