//! The alerter: one per process when `[[alerts.rules]]` are configured.
//! Every `evaluate_every` it asks the supervisor for the transports' live
//! state and runs one [`Evaluator::evaluate`]; the rules, incidents and
//! notices are [`crate::alerts`]'s. An evaluation still running when the
//! next is due is not doubled; one cut short by shutdown leaves nothing
//! half done that the next start does not finish (missing notices are
//! sent by the next evaluation).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{GetStatuses, Shutdown};
use crate::alerts::Evaluator;

pub struct Alerter {
    evaluator: Arc<Evaluator>,
    statuses: Recipient<GetStatuses>,
    every: Duration,
    evaluating: bool,
}

impl Alerter {
    pub fn new(evaluator: Evaluator, statuses: Recipient<GetStatuses>, every: Duration) -> Self {
        Alerter {
            evaluator: Arc::new(evaluator),
            statuses,
            every,
            evaluating: false,
        }
    }

    fn evaluate(&mut self, ctx: &mut Context<Self>) {
        if self.evaluating {
            return;
        }
        self.evaluating = true;
        let evaluator = self.evaluator.clone();
        let statuses = self.statuses.clone();
        let evaluation = async move {
            let statuses = statuses.send(GetStatuses).await.unwrap_or_default();
            evaluator.evaluate(statuses).await
        };
        ctx.spawn(evaluation.into_actor(self).map(|result, act, _| {
            act.evaluating = false;
            if let Err(err) = result {
                tracing::warn!(cause = %err, "alert evaluation failed; retrying at the next");
            }
        }));
    }
}

impl Actor for Alerter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // At once: notices a stopped node left unsent go out now.
        self.evaluate(ctx);
        ctx.run_interval(self.every, |act, ctx| act.evaluate(ctx));
    }
}

impl Handler<Shutdown> for Alerter {
    type Result = MessageResult<Shutdown>;

    /// Answers 0: the alerter has no deliveries of its own to leave unfinished.
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        ctx.stop();
        MessageResult(0)
    }
}
